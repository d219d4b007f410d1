"""The ``anytune`` command line: a thin shell over the SDK, one command group per noun."""
