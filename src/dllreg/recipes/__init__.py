"""Recipes: the libraries dllreg knows (``recipes/*.toml``, installed as ``dllreg._recipes``).

``schema`` holds the recipe schema, DepURLs and the ``RecipeBook`` (``load_recipes``);
``pep725`` maps PEP 725 ``[external]`` DepURLs to native requirements; ``source`` fetches a
recipe's source wheel and checks a library built from it against the recipe's ABI;
``wheelprovider`` knows a recipe's PyPI wheels installed as they are (where they keep the
library, how their version reads, what a consumer requires of them). May import libwheel,
binary and the ground floor.
"""
