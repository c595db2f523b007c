"""The call tracker: AMI messages in, domain events out. Pure logic, no I/O."""
