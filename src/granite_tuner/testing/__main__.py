"""`python -m granite_tuner.testing`: a fake watsonx.ai on loopback, until Ctrl-C."""

from granite_tuner.testing._standalone import main

raise SystemExit(main())
