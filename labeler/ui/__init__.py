"""The Gradio app. Only this package (and app.py) imports gradio."""
