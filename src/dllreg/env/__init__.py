"""The installed environment: the registry (``<site>/dllreg.libs/``) and what reads and writes it.

``registry`` finds site directories, installed libraries (PyPI wheel providers among them) and
their consumers (read only); ``write`` changes registrations, locked and atomic; ``register``
plans a registration of an external library (conda, the system) and ``syslookup`` finds the
system's copy; ``check`` decides an environment's consistency; ``inspect`` classifies a
binary's or a wheel's needs (vendored, registry, python, system). May import stub (the
template's search order), recipes, libwheel, binary and the ground floor.
"""
