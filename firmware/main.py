# Board entry point. The application is in app.py so that it ships as
# precompiled .mpy (or frozen): a .py here is compiled in RAM at every boot.
import app

app.main()
