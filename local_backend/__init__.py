"""The local trainer (transformers + peft + bitsandbytes) and its detached runner.

It lands with the local-backend issue; the core SDK never imports it directly: the ``local``
provider talks to it through its run directory and process handle.
"""
