"""Provider adapters. One module per service; each keeps every quirk of its service inside it.

Modules here import their service's SDK lazily, so reading a provider's ``capabilities`` never
needs its extra installed.  The registry (``anytune._registry``) finds them by dotted path.
"""
