import sys

from tether.launch import main

sys.exit(main())
