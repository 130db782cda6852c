"""Training: recipes (recipe.py), the loop (loop.py) and the distillation losses (distill.py)."""
from .recipe import Recipe, load_recipe, parse_recipe  # noqa: F401
