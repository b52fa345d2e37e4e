"""dllreg: one shared copy of each native library per Python environment.

Library wheels (``dllreg-lib-NAME``) install a native library once into the
environment's registry directory; consumers built with the ``dllreg.build``
backend preload it by absolute path at import through a generated ``_dlls.py``.
"""

__version__ = "0.1.0"
