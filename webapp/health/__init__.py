"""The health endpoint a load balancer probes: database and message queue."""
