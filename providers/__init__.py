"""Provider adapters: one package per service (a module for the small ones), each keeping every quirk
of its service inside it and importing no other provider.

Modules here import their service's SDK lazily, so reading a provider's ``capabilities`` never
needs its extra installed.  The registry (``anytune._registry``) finds them by dotted path.
"""
