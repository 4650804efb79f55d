"""The neutral network description: NetworkSpec, canonical tensor names and layouts, input conventions, expressibility."""
