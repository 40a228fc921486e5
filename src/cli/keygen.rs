use std::path::{Path, PathBuf};

use airgap::SigningKey;
use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct KeygenArgs {
    /// Where to write the private key (PKCS#8 PEM, mode 0600). The public key goes beside it
    /// as `<name>.pub`.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Overwrite existing key files.
    #[arg(long)]
    pub force: bool,
}

/// `signing.key` -> `signing.pub`; any other name gets `.pub` appended.
pub fn public_key_path(private: &Path) -> PathBuf {
    match private.extension() {
        Some(ext) if ext == "key" => private.with_extension("pub"),
        _ => PathBuf::from(format!("{}.pub", private.display())),
    }
}

pub fn run(args: KeygenArgs) -> anyhow::Result<()> {
    let public = public_key_path(&args.output);
    let key = SigningKey::generate().context("generating a key")?;
    key.save(&args.output, &public, args.force)
        .context("saving the key pair")?;
    println!(
        "wrote {} (private, keep it secret) and {} (public, ship it); key id {}",
        args.output.display(),
        public.display(),
        key.public_key().key_id()
    );
    Ok(())
}
