"""The wizard's steps, one module each: ``build(ctx)`` lays out the step; its event handlers are module-level."""
