"""What the services share: event models, broker topology, token verification, service plumbing."""
