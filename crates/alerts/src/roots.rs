//! Root certificates trusted when delivering over TLS: the public web PKI roots built in
//! (webpki-roots), plus any the operator adds for a private certificate authority, such as one
//! that signed an internal SMTP relay's or webhook receiver's certificate.

use std::fmt;
use std::path::Path;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::error::{Error, Result};

/// Certificates trusted as roots besides the built-in public ones. Parsed and checked when
/// made, so a bad file is a configuration error rather than a failed delivery later.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct RootCertificates {
    certs: Vec<CertificateDer<'static>>,
}

impl RootCertificates {
    /// Every certificate of a PEM document (other PEM sections, such as keys, are skipped). An
    /// error when it holds none, or one that a root store does not accept.
    pub fn from_pem(pem: &[u8]) -> Result<RootCertificates> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Config(format!("not valid PEM: {e}")))?;
        if certs.is_empty() {
            return Err(Error::Config(
                "holds no PEM certificate (-----BEGIN CERTIFICATE-----)".to_owned(),
            ));
        }
        for (i, cert) in certs.iter().enumerate() {
            RootCertStore::empty().add(cert.clone()).map_err(|e| {
                Error::Config(format!(
                    "certificate {} is not usable as a root: {e}",
                    i + 1
                ))
            })?;
        }
        Ok(RootCertificates { certs })
    }

    /// The certificates of a PEM file; the error names the file.
    pub fn read_pem_file(path: &Path) -> Result<RootCertificates> {
        let pem = std::fs::read(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        RootCertificates::from_pem(&pem).map_err(|e| match e {
            Error::Config(m) => Error::Config(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// Adds the certificates of `other`.
    pub fn extend(&mut self, other: RootCertificates) {
        self.certs.extend(other.certs);
    }

    pub fn len(&self) -> usize {
        self.certs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.certs.is_empty()
    }

    /// The certificates, DER-encoded.
    pub(crate) fn ders(&self) -> &[CertificateDer<'static>] {
        &self.certs
    }

    /// The built-in public roots plus these.
    pub(crate) fn root_store(&self) -> RootCertStore {
        let mut store = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        // Checked when parsed, so none is refused here.
        let (_added, _ignored) = store.add_parsable_certificates(self.certs.iter().cloned());
        store
    }
}

impl fmt::Debug for RootCertificates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RootCertificates({} extra)", self.certs.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed CA certificate (public part only), valid until 2126.
    const CA: &str = include_str!("../tests/fixtures/test-ca.pem");

    #[test]
    fn pem_files_hold_one_or_more_roots_and_bad_ones_are_refused() {
        let one = RootCertificates::from_pem(CA.as_bytes()).unwrap();
        assert_eq!(one.len(), 1);
        // A bundle of two, with a key section between them that is skipped.
        let bundle =
            format!("{CA}\n-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n{CA}");
        let two = RootCertificates::from_pem(bundle.as_bytes()).unwrap();
        assert_eq!(two.len(), 2);
        let store = two.root_store();
        assert_eq!(store.len(), webpki_roots::TLS_SERVER_ROOTS.len() + 2);
        assert_eq!(format!("{two:?}"), "RootCertificates(2 extra)");

        for bad in [
            "",
            "not a certificate",
            "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\n%%%\n-----END CERTIFICATE-----\n",
        ] {
            assert!(
                matches!(
                    RootCertificates::from_pem(bad.as_bytes()),
                    Err(Error::Config(_))
                ),
                "accepted {bad:?}"
            );
        }
        let missing = Path::new("/nonexistent/cognitude-ca.pem");
        let err = RootCertificates::read_pem_file(missing).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/cognitude-ca.pem"),
            "{err}"
        );
    }
}
