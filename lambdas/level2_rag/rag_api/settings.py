"""The query API's environment contract, parsed lazily into a frozen object on first use."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from common.bedrock_ids import BEDROCK_ID, GUARDRAIL_ID, GUARDRAIL_VERSION
from common.env import env_int, env_matching, env_str
from common.errors import ConfigurationError
from rag_api.filters import STORE_OPERATORS
from rag_api.validation import RETRIEVE_MODEL, property_schema

# The pattern botocore's bedrock-agent-runtime model gives for modelArn (a foundation-model or inference-profile
# ARN); a test keeps the two in step.
MODEL_ARN = re.compile(
    r"^(arn:aws(-[^:]+)?:(bedrock|sagemaker):[a-z0-9-]{1,20}:([0-9]{12})?:([a-z-]+/)?)?([a-z0-9.-]{1,63}){0,2}"
    r"(([:][a-z0-9-]{1,63}){0,2})?(/[a-z0-9]{1,12})?$"
)
MODEL_ARN_PREFIX = re.compile(r"^arn:aws[a-z-]*:bedrock:")
# The bounds of rag_answer_max_tokens (stacks/level2_rag/settings.py imports them): at least 1, and the kit's cap of
# 4096, the one Level 1 puts on Converse's maxTokens (the API itself takes up to 65,536).
ANSWER_MAX_TOKENS_RANGE = (1, 4096)


@dataclass(frozen=True)
class Settings:
    knowledge_base_id: str
    model_arn: str
    model_id: str
    embedding_model_id: str
    guardrail_id: str
    guardrail_version: str
    vector_store: str
    default_number_of_results: int
    answer_max_tokens: int  # RetrieveAndGenerate's textInferenceConfig.maxTokens: what bounds an answer's time
    metrics_namespace: str
    service_name: str


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Read and validate the environment once; raises ConfigurationError naming the bad variable."""
    model_arn = env_str("MODEL_ARN")
    if not (MODEL_ARN_PREFIX.match(model_arn) and MODEL_ARN.match(model_arn)):
        raise ConfigurationError(
            "Environment variable MODEL_ARN must be a Bedrock foundation-model or inference-profile ARN."
        )
    schema = property_schema(RETRIEVE_MODEL, "numberOfResults")
    return Settings(
        knowledge_base_id=env_matching("KNOWLEDGE_BASE_ID", BEDROCK_ID, "a 10-character knowledge base id"),
        model_arn=model_arn,
        model_id=env_str("MODEL_ID"),
        # The knowledge base's embedding model, which embeds a /retrieve query (Retrieve invokes no other model).
        embedding_model_id=env_str("EMBEDDING_MODEL_ID"),
        guardrail_id=env_matching("GUARDRAIL_ID", GUARDRAIL_ID, "a guardrail id (lowercase letters and digits)"),
        guardrail_version=env_matching("GUARDRAIL_VERSION", GUARDRAIL_VERSION, "DRAFT or a version number"),
        vector_store=_vector_store(),
        default_number_of_results=env_int("DEFAULT_NUMBER_OF_RESULTS", None, schema["minimum"], schema["maximum"]),
        answer_max_tokens=env_int("ANSWER_MAX_TOKENS", None, *ANSWER_MAX_TOKENS_RANGE),
        metrics_namespace=env_str("POWERTOOLS_METRICS_NAMESPACE"),
        service_name=env_str("POWERTOOLS_SERVICE_NAME"),
    )


def _vector_store() -> str:
    """VECTOR_STORE: the knowledge base's vector store, which decides the filter operators (no default)."""
    value = env_str("VECTOR_STORE")
    if value not in STORE_OPERATORS:
        raise ConfigurationError(f"Environment variable VECTOR_STORE must be one of: {', '.join(STORE_OPERATORS)}.")
    return value
