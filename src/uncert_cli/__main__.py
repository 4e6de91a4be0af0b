"""``python -m uncert_cli`` (also the entry point under ``torchrun``)."""

import sys

try:
    from uncert_cli.cli.main import main
except KeyboardInterrupt:  # Ctrl-C before the CLI's own handler is in place: still one line, no traceback
    sys.stderr.write("uncert: interrupted; nothing was written\n")
    sys.exit(130)

sys.exit(main())
