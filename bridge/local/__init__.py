"""The local stack: everything but the Azure control plane, on loopback. Never deployed.

Importing it registers the emulator's credential with `bridge.composition`, so that whatever runs
on the stack (the dev host, `bridge serve`, the tests) reaches the emulator as the Function App
reaches Azure ML, while the production wiring imports nothing from here.
"""

from bridge.local import credential as credential  # registers the emulator's credential source
