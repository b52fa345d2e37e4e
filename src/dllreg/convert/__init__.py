"""Wheel conversions: devendor (read -> analyse -> plan -> write), vendor, repair, install, freezing.

``read`` takes input and library wheels in whole and checked, each binary parsed once into
``facts`` and its checked bytes kept in a ``spool`` for the write step; ``analyse`` finds what
a repaired wheel vendors and who needs it, from those facts; ``plan`` decides over them (pure),
with ``share`` (which copy provably serves which across builds) and ``macos`` (the Mach-O side
of the plan and the patch); ``write`` turns the plan into bytes, then files. ``threads`` runs
read and write on every core within a memory budget.
``vendor`` copies registry libraries into a consumer wheel; ``repair`` runs the platform's
repair tool with registry libraries left out; ``install`` runs pip around devendor;
``pyinstaller`` is the PyInstaller hook (a frozen app carries the registry libraries its
consumers load). May import build, env, stub, recipes, libwheel, binary and the ground floor.
"""
