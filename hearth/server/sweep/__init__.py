"""`hearth sweep`: a grid of sampling settings over a prompt set, each cell's answers measured, tabled and drawn."""
