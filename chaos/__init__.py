"""Fault drills against real local clusters: scripted faults, invariant checks, a verdict."""
