"""What StopModelCustomizationJob answers for a job it can no longer stop, read by the stack-delete cleanup and by
the pipeline's StopJob state (which names them Bedrock.<code>)."""

# ConflictException: the job is already stopping or has just ended; ValidationException: it is no longer
# stoppable. Both are declared for the operation in botocore bedrock 2023-04-20. Whoever is refused reads the job's
# status again, so a refusal for any other reason is not taken as a stop.
STOP_REFUSED = ("ConflictException", "ValidationException")
