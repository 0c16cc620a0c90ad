import sys

from torchyard.cli.main import main

sys.exit(main())
