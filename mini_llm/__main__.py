"""`python -m mini_llm ...` is the same as the `mini-llm` command."""

from mini_llm.cli import main

raise SystemExit(main())
