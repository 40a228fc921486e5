//! Argument definitions and dispatch.

mod bundle;
mod cluster;
mod docs;
mod keygen;
mod node;
mod output;
mod progress;
mod registry;
mod release;
mod tenant_key;
mod trust;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "airgap",
    version,
    about = "Signed offline bundles and air-gapped installs of the management platform"
)]
pub struct Cli {
    /// More detail on stderr (-v: info, -vv: debug, -vvv: trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate an ed25519 signing key pair.
    #[command(long_about = include_str!("reference/keygen.txt"))]
    Keygen(keygen::KeygenArgs),
    /// Build, verify and inspect bundles.
    #[command(subcommand)]
    Bundle(bundle::BundleCommand),
    /// Seed a registry from a bundle, or serve one.
    #[command(subcommand)]
    Registry(registry::RegistryCommand),
    /// Manage the releases a registry holds.
    #[command(subcommand)]
    Release(release::ReleaseCommand),
    /// Install a management node (standalone, or the first of an HA cluster) from a bundle, fully offline.
    #[command(long_about = include_str!("reference/install.txt"))]
    Install(node::InstallArgs),
    /// Move an installed node to a newer release from a bundle (keys and certificates kept).
    #[command(long_about = include_str!("reference/upgrade.txt"))]
    Upgrade(node::UpgradeArgs),
    /// Join this machine to an HA cluster as one of its three nodes.
    #[command(long_about = include_str!("reference/join.txt"))]
    Join(node::JoinArgs),
    /// Manage the HA cluster's join tokens.
    #[command(subcommand)]
    #[command(long_about = include_str!("reference/token.txt"))]
    Token(cluster::TokenCommand),
    /// Manage the HA cluster's nodes.
    #[command(subcommand)]
    #[command(long_about = include_str!("reference/node.txt"))]
    Node(cluster::NodeCommand),
    /// The join API and VIP election of an HA node (run by the agent).
    #[command(hide = true)]
    ClusterService(node::RootArgs),
    /// The key the cluster trusts releases from, and rotating it.
    #[command(subcommand)]
    #[command(long_about = include_str!("reference/trust.txt"))]
    Trust(trust::TrustCommand),
    /// Tenant keys, wrapped under the installation's root key, and rotating the root key.
    #[command(subcommand)]
    #[command(long_about = include_str!("reference/tenant-key.txt"))]
    TenantKey(tenant_key::TenantKeyCommand),
    /// Report the node's install phases and services (exit 3 when not healthy).
    #[command(long_about = include_str!("reference/status.txt"))]
    Status(node::StatusArgs),
    /// Supervise the node's services (what the systemd unit runs).
    #[command(long_about = include_str!("reference/agent.txt"))]
    Agent(node::RootArgs),
    /// Stop the node's agent and services.
    #[command(long_about = include_str!("reference/stop-reset.txt"))]
    Stop(node::RootArgs),
    /// Remove the installation under the root (asks first unless --yes).
    #[command(long_about = include_str!("reference/stop-reset.txt"))]
    Reset(node::ResetArgs),
    /// Print a shell completion script.
    Completion(docs::CompletionArgs),
    /// Write man pages for airgap and every command.
    Man(docs::ManArgs),
    /// Print the licences of the third-party software built into this binary.
    Licenses,
}

impl Command {
    /// The long-running services (the agent, the cluster service, a registry): sockets close
    /// under them, so a broken pipe must stay an error they handle, never a signal.
    pub fn is_service(&self) -> bool {
        matches!(
            self,
            Command::Agent(_)
                | Command::ClusterService(_)
                | Command::Registry(registry::RegistryCommand::Serve(_))
        )
    }
}

pub fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("AIRGAP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into log files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Keygen(args) => keygen::run(args),
        Command::Bundle(cmd) => bundle::run(cmd),
        Command::Registry(cmd) => registry::run(cmd),
        Command::Release(cmd) => release::run(cmd),
        Command::Install(args) => node::install_cmd(args),
        Command::Upgrade(args) => node::upgrade_cmd(args),
        Command::Join(args) => node::join_cmd(args),
        Command::Token(cmd) => cluster::token(cmd),
        Command::Trust(cmd) => trust::run(cmd),
        Command::TenantKey(cmd) => tenant_key::run(cmd),
        Command::Node(cmd) => cluster::node(cmd),
        Command::ClusterService(args) => cluster::service(args),
        Command::Status(args) => node::status_cmd(args),
        Command::Agent(args) => node::agent_cmd(args),
        Command::Stop(args) => node::stop_cmd(args),
        Command::Reset(args) => node::reset_cmd(args),
        Command::Completion(args) => docs::completion(args),
        Command::Man(args) => docs::man(args),
        Command::Licenses => {
            print!("{}", docs::THIRD_PARTY_NOTICES);
            Ok(())
        }
    }
}
