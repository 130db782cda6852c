"""Training: recipes (recipe.py) and the loop (loop.py), which uses the optimiser and schedule
(optim.py), the objective (objectives.py: plain or a distillation; losses in distill.py), the teacher
(teacher.py), the per-epoch state and its resume points (state.py, resume.py) and the final checkpoint
(finish.py)."""
from .recipe import Recipe, load_recipe, parse_recipe  # noqa: F401
