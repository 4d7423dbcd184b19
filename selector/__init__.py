"""Small heads (selector, sentiment) on the frozen generator's activations."""
