"""Library wheels (``dllreg-lib-NAME``) and the files they carry.

``package`` builds one from shared libraries (``package-lib``); ``manifest`` is the format the
stub reads; ``pkgconfig`` and ``cmakeconfig`` write (and evaluate) the relocatable build files;
``platforms`` checks wheel tags against the binaries; ``syslibs`` knows what the target system
provides; ``naming`` is the rule for the names a vendored copy gets once packaged (and for
reading a vendored file's name back). May import binary and the ground floor.
"""
