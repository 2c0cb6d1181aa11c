"""CDK stacks of genai-spectrum-kit: one module per level of the customization spectrum."""
