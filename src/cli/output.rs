//! Machine-readable output: `--json` prints one JSON document on standard output, described by
//! a schema under `docs/json/` (checked against real output by the tests); the prose and
//! progress a person reads go to standard error or are left out.

/// Prints `value` as the command's one JSON document.
pub fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// Prints a line for a person, unless `--json` (`json`) asked for the document instead.
pub fn prose(json: bool) -> impl Fn(String) {
    move |line| {
        if !json {
            println!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// `(command path joined by '-', has --json)` for every command.
    fn json_commands(cmd: &clap::Command, path: &mut Vec<String>, out: &mut Vec<String>) {
        if cmd.get_arguments().any(|a| a.get_long() == Some("json")) {
            out.push(path.join("-"));
        }
        for sub in cmd.get_subcommands() {
            path.push(sub.get_name().to_string());
            json_commands(sub, path, out);
            path.pop();
        }
    }

    /// Every `--json` is documented by a schema (and the tests validate real output against
    /// each); a schema with no command is stale.
    #[test]
    fn every_json_output_has_its_schema() {
        let mut commands = Vec::new();
        json_commands(
            &super::super::Cli::command(),
            &mut Vec::new(),
            &mut commands,
        );
        commands.sort();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/json");
        let mut schemas: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| {
                let name = e.ok()?.file_name().to_string_lossy().into_owned();
                name.strip_suffix(".schema.json").map(str::to_string)
            })
            .filter(|n| n != "common")
            .collect();
        schemas.sort();
        assert!(commands.len() >= 10, "{commands:?}");
        assert_eq!(commands, schemas);
    }
}
