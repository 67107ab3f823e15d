from mmlab.cli import main

raise SystemExit(main())
