"""The cleanup resource's Mode values, which the Level 3 stack sets (stacks/level3_finetune/cleanup.py) and the
function reads: one copy for both sides."""

DELETE_MODELS = "DeleteModels"  # sandbox: stop, unserve and delete the custom models
KEEP_MODELS = "KeepModels"  # prod: stop and unserve, keep the custom models
MODES = (DELETE_MODELS, KEEP_MODELS)
