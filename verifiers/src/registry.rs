//! Verifiers by name. A recipe picks verifiers by name and may remap a dataset's name (the
//! RLVR data's `dataset` column) to one.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::{GoogleIfEval, Gsm8k, IfEval, Math, Mode, Truth, Verdict, Verifier, VerifierError};

/// Named verifiers.
#[derive(Clone)]
pub struct Registry {
    verifiers: BTreeMap<String, Arc<dyn Verifier>>,
    aliases: BTreeMap<String, String>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("names", &self.names())
            .field("aliases", &self.aliases)
            .finish()
    }
}

impl Registry {
    /// The built-in verifiers in `mode`: `gsm8k`, `math` (alias `MATH`, the dataset's spelling),
    /// `ifeval` (the RLVR data's IF rows), `google_ifeval` (the IFEval benchmark's rows).
    pub fn new(mode: Mode) -> Self {
        let mut r = Self {
            verifiers: BTreeMap::new(),
            aliases: BTreeMap::new(),
        };
        r.register(Arc::new(Gsm8k::new(mode)));
        r.register(Arc::new(Math::new(mode)));
        r.register(Arc::new(IfEval::new(mode)));
        r.register(Arc::new(GoogleIfEval));
        r.alias("MATH", "math");
        r
    }

    /// Add (or replace) a verifier under its own name.
    pub fn register(&mut self, verifier: Arc<dyn Verifier>) {
        self.verifiers.insert(verifier.name().to_string(), verifier);
    }

    /// Route `dataset` to the verifier `name`.
    pub fn alias(&mut self, dataset: &str, name: &str) {
        self.aliases.insert(dataset.to_string(), name.to_string());
    }

    /// Registered names (aliases excluded), sorted.
    pub fn names(&self) -> Vec<String> {
        self.verifiers.keys().cloned().collect()
    }

    /// The verifier for a name or dataset alias.
    pub fn get(&self, name: &str) -> Result<&Arc<dyn Verifier>, VerifierError> {
        let key = self.aliases.get(name).map_or(name, String::as_str);
        self.verifiers.get(key).ok_or_else(|| VerifierError::Unknown {
            name: name.to_string(),
            known: self
                .names()
                .into_iter()
                .chain(self.aliases.keys().cloned())
                .collect(),
        })
    }

    /// Parse a label for the verifier `name` (at data-load time).
    pub fn parse_truth(&self, name: &str, raw: &str) -> Result<Truth, VerifierError> {
        Ok(self.get(name)?.parse_truth(raw)?)
    }

    /// Parse and verify in one call.
    pub fn verify(&self, name: &str, response: &str, raw_truth: &str) -> Result<Verdict, VerifierError> {
        let v = self.get(name)?;
        Ok(v.verify(response, &v.parse_truth(raw_truth)?))
    }
}
