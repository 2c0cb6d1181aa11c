"""Where in its bucket the invocation-logging setting puts what: one copy for the function (which sets Bedrock's
key prefixes and keeps its own state), the stack (which grants and expires by prefix) and Level 3 (which distills
from the records). Each ends in '/'; Bedrock's keyPrefix takes the name without it."""

INVOCATIONS_PREFIX = "invocations/"  # s3Config.keyPrefix: the invocation records
LARGE_DATA_PREFIX = "large-data/"  # cloudWatchConfig.largeDataDeliveryS3Config.keyPrefix: payloads too large for logs
STATE_PREFIX = "kit-state/"  # the function's own state: the setting to restore on delete
