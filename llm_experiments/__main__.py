"""``python -m llm_experiments ...`` runs the ``llm-hybrid`` CLI."""
import sys

from .cli import main

sys.exit(main())
