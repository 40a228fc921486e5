//! The templates in `manifests/`, embedded in the binary, and the one way they are rendered.
//!
//! A placeholder is `{{ name }}` in a YAML value position. It is replaced by its value encoded
//! as JSON, which YAML reads as the same scalar or flow collection, so a value can never add
//! structure (no injection through an FQDN or a path). Both a placeholder without a value and
//! a value no placeholder uses are errors: the templates and the code that fills them must
//! agree exactly.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// One embedded template.
#[derive(Debug, Clone, Copy)]
pub struct Template {
    /// Its file name in `manifests/`.
    pub name: &'static str,
    text: &'static str,
}

pub const KUBEADM: Template = Template {
    name: "kubeadm.yaml",
    text: include_str!("../../manifests/kubeadm.yaml"),
};
pub const KUBEADM_JOIN: Template = Template {
    name: "kubeadm-join.yaml",
    text: include_str!("../../manifests/kubeadm-join.yaml"),
};
pub const AUDIT_POLICY: Template = Template {
    name: "audit-policy.yaml",
    text: include_str!("../../manifests/audit-policy.yaml"),
};
pub const ADMISSION: Template = Template {
    name: "admission-config.yaml",
    text: include_str!("../../manifests/admission-config.yaml"),
};
pub const KUBELET_SYSCTL: Template = Template {
    name: "kubelet-sysctl.conf",
    text: include_str!("../../manifests/kubelet-sysctl.conf"),
};
pub const KUBELET_UNIT: Template = Template {
    name: "kubelet.service",
    text: include_str!("../../manifests/kubelet.service"),
};
pub const KUBELET_DROPIN: Template = Template {
    name: "kubelet-dropin.conf",
    text: include_str!("../../manifests/kubelet-dropin.conf"),
};
pub const NAMESPACE: Template = Template {
    name: "namespace.yaml",
    text: include_str!("../../manifests/namespace.yaml"),
};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("template {template}: no value for placeholder `{name}`")]
    Missing {
        template: &'static str,
        name: String,
    },
    #[error("template {template}: value `{name}` is not used by any placeholder")]
    Unused {
        template: &'static str,
        name: String,
    },
    #[error("template {template}: unterminated placeholder")]
    Unterminated { template: &'static str },
}

/// Values by placeholder name.
pub type Values = BTreeMap<&'static str, Value>;

impl Template {
    pub fn render(&self, values: &Values) -> Result<String, TemplateError> {
        let mut out = String::with_capacity(self.text.len() + 256);
        let mut used = BTreeSet::new();
        let mut rest = self.text;
        while let Some(open) = rest.find("{{") {
            out.push_str(&rest[..open]);
            let after = &rest[open + 2..];
            let close = after.find("}}").ok_or(TemplateError::Unterminated {
                template: self.name,
            })?;
            let name = after[..close].trim();
            let value = values.get(name).ok_or_else(|| TemplateError::Missing {
                template: self.name,
                name: name.to_string(),
            })?;
            out.push_str(&value.to_string());
            used.insert(name);
            rest = &after[close + 2..];
        }
        out.push_str(rest);
        if let Some(name) = values.keys().find(|k| !used.contains(*k)) {
            return Err(TemplateError::Unused {
                template: self.name,
                name: name.to_string(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T: Template = Template {
        name: "t.yaml",
        text: "a: {{ x }}\nb: {{y}}\n",
    };

    #[test]
    fn values_are_json_encoded_so_they_cannot_add_structure() {
        let values = Values::from([
            ("x", json!("evil\nkind: Secret")),
            ("y", json!(["one", "two"])),
        ]);
        let text = T.render(&values).unwrap();
        assert_eq!(text, "a: \"evil\\nkind: Secret\"\nb: [\"one\",\"two\"]\n");
        let parsed: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(parsed["a"].as_str(), Some("evil\nkind: Secret"));
        assert_eq!(parsed["b"][1].as_str(), Some("two"));
    }

    #[test]
    fn missing_unused_and_unterminated_placeholders_are_errors() {
        let only_x = Values::from([("x", json!(1))]);
        assert_eq!(
            T.render(&only_x),
            Err(TemplateError::Missing {
                template: "t.yaml",
                name: "y".into()
            })
        );
        let extra = Values::from([("x", json!(1)), ("y", json!(2)), ("z", json!(3))]);
        assert_eq!(
            T.render(&extra),
            Err(TemplateError::Unused {
                template: "t.yaml",
                name: "z".into()
            })
        );
        let broken = Template {
            name: "b",
            text: "a: {{ x",
        };
        assert_eq!(
            broken.render(&only_x),
            Err(TemplateError::Unterminated { template: "b" })
        );
    }
}
