# SPDX-License-Identifier: BSD-3-Clause
from melissa.cli import main

raise SystemExit(main())
