"""CAPPr 0.9.6 is the reference here: its transformers 5 / numpy 2 shim goes in before any test imports it."""

import cappr_shim

cappr_shim.apply()
