"""Files for running Huizhen in production (nginx in front of several nodes)."""
