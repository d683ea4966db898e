"""`python -m mini_llm.train ...` (and `torchrun ... -m mini_llm.train ...`) is `mini-llm train ...`.

This entry point is the one place under mini_llm/train that reaches the command line: the
package itself never imports mini_llm.cli.
"""

import sys

from mini_llm.cli import main

sys.exit(main(["train", *sys.argv[1:]]))
