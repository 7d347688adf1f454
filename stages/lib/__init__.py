"""The rooms behind the stages, each a folder named by what it holds, declared here lowest first: a module
imports its own room or one below it, never one above (tests/test_rooms.py holds it), and the stage
modules in stages/ stand above them all. docs/design.md says what each room holds."""

ROOMS = ("core", "params", "data", "audit", "study", "results", "model", "report")
