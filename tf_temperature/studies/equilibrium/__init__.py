"""Equilibrium on a network: populations trained at several (eta, B) until
their loss plateaus, with the plateau's collapse onto eta / B (`experiment`,
`plateaus`, `thermometer`, `report`, `figures`)."""
