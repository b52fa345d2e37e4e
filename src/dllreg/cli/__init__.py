"""The command line: argument parsing and printing, the one layer that prints and exits.

``main`` (``python -m dllreg``, the ``dllreg`` script) parses and dispatches; ``devendor``,
``install``, ``package_lib``, ``register`` and ``vendor`` add their commands;
``inspect_output`` shapes ``inspect``'s report as text or JSON. May import every layer below;
only ``dllreg.__main__`` imports it.
"""
