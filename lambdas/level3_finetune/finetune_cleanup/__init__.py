"""CloudFormation custom resource (every stage): on stack deletion, stop Level 3's executions and jobs and delete
what serves its custom models; in the sandbox also delete the models, before the key."""
