"""The metrics both APIs write (EMF, the function's service as the dimension) and their stacks alarm on
(stacks/shared/alarms.py): one copy for both sides."""

MODEL_ACCESS_DENIED = "ModelAccessDenied"  # a 403 model_access_denied: the deployment's fault, every caller gets it
MODEL_THROTTLED = "ModelThrottled"  # Bedrock still throttling after the kit's retries: a 429 to the caller
# Level 2's functions (the query API and the ingest function) write their knowledge base's metrics under this
# dimension, beside Powertools' service; the Level 2 stack's ingestion alarms read it.
KNOWLEDGE_BASE_DIMENSION = "KnowledgeBaseId"
