//! The `namespaces` resource as kubectl uses it: list and get (plain or as a Table), create
//! (`kubectl create namespace`, JSON or protobuf), delete.

use super::*;
use crate::protobuf;

impl ApiServer {
    /// `/api/v1/namespaces`: list or create.
    pub(super) async fn namespaces(
        &self,
        method: &Method,
        q: &Query,
        repr: Representation,
        req: Request<Incoming>,
    ) -> Response<Body> {
        match *method {
            Method::GET => {
                let (items, rv) = self.store.namespaces();
                let metadata = json!({"resourceVersion": rv.to_string()});
                match repr {
                    Representation::Table(opts) => {
                        json_response(200, &table::namespace_table(&items, opts, metadata))
                    }
                    _ => json_response(
                        200,
                        &json!({
                            "kind": "NamespaceList",
                            "apiVersion": "v1",
                            "metadata": metadata,
                            "items": items.iter().map(Stripped).collect::<Vec<_>>(),
                        }),
                    ),
                }
            }
            Method::POST => match read_namespace_name(q, req).await {
                Ok((dry, name)) => match self.store.create_namespace(&name, dry) {
                    Ok(created) => json_response(201, &created),
                    Err(e) => error_response(&e),
                },
                Err(response) => response,
            },
            _ => status_response(status::method_not_allowed()),
        }
    }

    /// `/api/v1/namespaces/{name}`: get or delete.
    pub(super) fn namespace(
        &self,
        method: &Method,
        name: String,
        q: &Query,
        repr: Representation,
    ) -> Response<Body> {
        let result = match *method {
            Method::GET => self
                .store
                .namespace(&name)
                .ok_or(StoreError::NamespaceNotFound(name)),
            Method::DELETE => match dry_run(q) {
                Ok(dry) => self.store.delete_namespace(&name, dry),
                Err(r) => return status_response(r),
            },
            _ => return status_response(status::method_not_allowed()),
        };
        match (result, repr) {
            (Ok(obj), Representation::Table(opts)) => {
                let rv = obj.pointer("/metadata/resourceVersion").cloned();
                let metadata = json!({"resourceVersion": rv});
                json_response(200, &table::namespace_table(&[obj], opts, metadata))
            }
            (Ok(obj), _) => json_response(200, &obj),
            (Err(e), _) => error_response(&e),
        }
    }
}

/// The dry-run flag and the name of the Namespace a create request sends (as JSON, YAML or,
/// like kubectl 1.33, protobuf), or the error response to send instead.
async fn read_namespace_name(
    q: &Query,
    req: Request<Incoming>,
) -> Result<(bool, String), Response<Body>> {
    let dry = dry_run(q).map_err(status_response)?;
    let ct = content_type(&req);
    let bytes = read_body(req.into_body()).await.map_err(status_response)?;
    let name = if ct.contains("protobuf") {
        protobuf::object_name(&bytes)
            .ok_or_else(|| bad_request("the body of the request is not a Namespace"))?
    } else {
        let obj = decode_body(&bytes, &ct).map_err(status_response)?;
        let name = obj.pointer("/metadata/name").and_then(Value::as_str);
        name.unwrap_or("").to_owned()
    };
    Ok((dry, name))
}
