"""The application on top of every stage: the `cvserve` command, one module per subcommand
group, and the demo. The only code that imports profiling/."""
