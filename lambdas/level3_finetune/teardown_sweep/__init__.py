"""Hourly backstop (both Level 3 paths): start the teardown for each pipeline execution that ended FAILED,
TIMED_OUT or ABORTED recently, once per execution, in case its status event never started it."""
