"""Set-up and run helpers behind `make run` and `make test`."""
