"""Lightning callbacks that every videogen run gets."""
