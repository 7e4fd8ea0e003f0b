//! One event per MCP JSON-RPC message, recorded around the handler: its method, the tool,
//! prompt or resource it names, how long the handler took, how it ended (success, a tool
//! result with `isError`, or a JSON-RPC error and its code), and who sent it: the token's
//! user and client, and the client software from `initialize` (`clientInfo`). Batches reach
//! the handler one message at a time, so each of their items is one event. Never the
//! arguments or the result.
//!
//! rmcp serves a `ServerHandler`, and routes each method to one of its functions, so the
//! wrapper forwards every request function with a stopwatch around it (`recorded!`); the
//! ones it does not list are rmcp's defaults, which answer without reaching our server.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use axum::http::request::Parts;
// Logging and resource subscriptions are deprecated for 2026-07-28 but still served to older
// clients, so their messages are recorded too.
#[allow(deprecated)]
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CancelledNotificationParam, CompleteRequestParams,
    CompleteResult, CustomNotification, CustomRequest, CustomResult, DiscoverResult,
    GetPromptRequestParams, GetPromptResponse, Implementation, InitializeRequestParams,
    InitializeResult, ListPromptsResult, ListResourceTemplatesResult, ListResourcesResult,
    ListToolsResult, PaginatedRequestParams, ProgressNotificationParam, ProtocolVersion,
    ReadResourceRequestParams, ReadResourceResponse, ServerConfig, SetLevelRequestParams,
    SubscribeRequestParams, Tool, UnsubscribeRequestParams,
};
use rmcp::service::{NotificationContext, RequestContext, RoleServer};
use rmcp::{ErrorData as McpError, ServerHandler};

use mcp_oauth_core::analytics::{Event, McpResult, Transport};

use super::Recorder;
use super::geoip::RequestCountry;
use crate::resource::Principal;

/// An MCP server handler whose messages are recorded.
#[derive(Clone)]
pub struct Recorded<S> {
    pub inner: S,
    pub recorder: Arc<Recorder>,
}

/// Who sent a message, from the HTTP request it came in and the session's handshake.
struct Sender {
    principal: Option<Principal>,
    transport: Option<Transport>,
    software: Option<String>,
    protocol_version: Option<String>,
    country: Option<String>,
}

fn sender_of(
    extensions: &rmcp::model::Extensions,
    client_info: Option<&Implementation>,
    protocol_version: Option<&ProtocolVersion>,
) -> Sender {
    let parts = extensions.get::<Parts>();
    let transport = parts.map(|p| {
        let path = p.uri.path();
        if path.ends_with("/message") || path.ends_with("/sse") {
            Transport::LegacySse
        } else {
            Transport::StreamableHttp
        }
    });
    Sender {
        principal: parts.and_then(|p| p.extensions.get::<Principal>().cloned()),
        transport,
        country: parts.and_then(|p| p.extensions.get::<RequestCountry>().map(|c| c.0.clone())),
        software: client_info.map(|i| format!("{}/{}", i.name, i.version)),
        protocol_version: protocol_version.map(ToString::to_string),
    }
}

/// A message being handled.
struct Watch {
    at: i64,
    start: Instant,
    method: &'static str,
    target: Option<String>,
    sender: Sender,
    recorder: Arc<Recorder>,
}

impl Watch {
    fn finish(self, result: McpResult, timed: bool) {
        let latency = self.start.elapsed().as_micros() as u64;
        let s = &self.sender;
        let mut event = Event::mcp(
            self.at,
            self.method,
            self.target.as_deref(),
            result,
            latency,
        )
        .user(
            s.principal
                .as_ref()
                .filter(|p| p.subject != p.client_id)
                .map(|p| p.subject.as_str()),
        )
        .client(s.principal.as_ref().map(|p| p.client_id.as_str()))
        .mcp_context(
            s.software.as_deref(),
            s.protocol_version.as_deref(),
            s.transport,
        )
        .country(s.country.as_deref());
        if !timed {
            event.latency_us = None;
        }
        self.recorder.record(event);
    }
}

fn outcome_of<T>(result: &Result<T, McpError>) -> McpResult {
    match result {
        Ok(_) => McpResult::Success,
        Err(e) => McpResult::ProtocolError(e.code.0),
    }
}

impl<S: ServerHandler> Recorded<S> {
    fn watch(
        &self,
        method: &'static str,
        target: Option<String>,
        context: &RequestContext<RoleServer>,
    ) -> Option<Watch> {
        if !self.recorder.enabled() {
            return None;
        }
        Some(Watch {
            at: self.recorder.now_ms(),
            start: Instant::now(),
            method,
            target,
            sender: sender_of(
                &context.extensions,
                context.client_info().as_ref(),
                context.protocol_version().as_ref(),
            ),
            recorder: self.recorder.clone(),
        })
    }

    fn notified(&self, method: &'static str, context: &NotificationContext<RoleServer>) {
        if !self.recorder.enabled() {
            return;
        }
        let info = context.peer.peer_info();
        Watch {
            at: self.recorder.now_ms(),
            start: Instant::now(),
            method,
            target: None,
            sender: sender_of(
                &context.extensions,
                info.as_ref().map(|i| &i.client_info),
                info.as_ref().map(|i| &i.protocol_version),
            ),
            recorder: self.recorder.clone(),
        }
        .finish(McpResult::Success, false);
    }
}

/// Forward request functions `name(request) -> result` as `"method"`, naming the target
/// with `|request| …`.
macro_rules! recorded {
    ($($name:ident($req:ty) -> $ret:ty, $method:literal, $target:expr;)*) => {$(
        async fn $name(
            &self,
            request: $req,
            context: RequestContext<RoleServer>,
        ) -> Result<$ret, McpError> {
            let target: Option<String> = ($target)(&request);
            let watch = self.watch($method, target, &context);
            let result = self.inner.$name(request, context).await;
            if let Some(w) = watch {
                w.finish(outcome_of(&result), true);
            }
            result
        }
    )*};
}

fn none<T>(_: &T) -> Option<String> {
    None
}

#[allow(deprecated)]
impl<S: ServerHandler> ServerHandler for Recorded<S> {
    recorded! {
        complete(CompleteRequestParams) -> CompleteResult, "completion/complete", none;
        set_level(SetLevelRequestParams) -> (), "logging/setLevel", none;
        get_prompt(GetPromptRequestParams) -> GetPromptResponse, "prompts/get",
            |r: &GetPromptRequestParams| Some(r.name.to_string());
        list_prompts(Option<PaginatedRequestParams>) -> ListPromptsResult, "prompts/list", none;
        list_resources(Option<PaginatedRequestParams>) -> ListResourcesResult,
            "resources/list", none;
        list_resource_templates(Option<PaginatedRequestParams>) -> ListResourceTemplatesResult,
            "resources/templates/list", none;
        read_resource(ReadResourceRequestParams) -> ReadResourceResponse, "resources/read",
            |r: &ReadResourceRequestParams| Some(r.uri.to_string());
        subscribe(SubscribeRequestParams) -> (), "resources/subscribe", none;
        unsubscribe(UnsubscribeRequestParams) -> (), "resources/unsubscribe", none;
        list_tools(Option<PaginatedRequestParams>) -> ListToolsResult, "tools/list", none;
        on_custom_request(CustomRequest) -> CustomResult, "(unknown method)", none;
    }

    async fn ping(&self, context: RequestContext<RoleServer>) -> Result<(), McpError> {
        let watch = self.watch("ping", None, &context);
        let result = self.inner.ping(context).await;
        if let Some(w) = watch {
            w.finish(outcome_of(&result), true);
        }
        result
    }

    async fn initialize(
        &self,
        request: InitializeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<InitializeResult, McpError> {
        let mut watch = self.watch("initialize", None, &context);
        if let Some(w) = &mut watch {
            // The session's handshake is this request: take the client from it.
            w.sender.software = Some(format!(
                "{}/{}",
                request.client_info.name, request.client_info.version
            ));
            w.sender.protocol_version = Some(request.protocol_version.to_string());
        }
        let result = self.inner.initialize(request, context).await;
        if let Some(mut w) = watch {
            if let Ok(r) = &result {
                // The version both sides agreed on, rather than the one asked for.
                w.sender.protocol_version = Some(r.protocol_version.to_string());
            }
            w.finish(outcome_of(&result), true);
        }
        result
    }

    fn negotiate_initialize(
        &self,
        request: &InitializeRequestParams,
    ) -> Result<InitializeResult, McpError> {
        self.inner.negotiate_initialize(request)
    }

    fn supported_protocol_versions(&self) -> Cow<'static, [ProtocolVersion]> {
        self.inner.supported_protocol_versions()
    }

    async fn discover(
        &self,
        context: RequestContext<RoleServer>,
    ) -> Result<DiscoverResult, McpError> {
        let watch = self.watch("server/discover", None, &context);
        let result = self.inner.discover(context).await;
        if let Some(w) = watch {
            w.finish(outcome_of(&result), true);
        }
        result
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let watch = self.watch("tools/call", Some(request.name.to_string()), &context);
        let result = self.inner.call_tool(request, context).await;
        if let Some(w) = watch {
            let outcome = match &result {
                Ok(CallToolResponse::Complete(r)) if r.is_error == Some(true) => {
                    McpResult::ToolError
                }
                other => outcome_of(other),
            };
            w.finish(outcome, true);
        }
        result
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.inner.get_tool(name)
    }

    async fn on_cancelled(
        &self,
        notification: CancelledNotificationParam,
        context: NotificationContext<RoleServer>,
    ) {
        self.notified("notifications/cancelled", &context);
        self.inner.on_cancelled(notification, context).await;
    }

    async fn on_progress(
        &self,
        notification: ProgressNotificationParam,
        context: NotificationContext<RoleServer>,
    ) {
        self.notified("notifications/progress", &context);
        self.inner.on_progress(notification, context).await;
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        self.notified("notifications/initialized", &context);
        self.inner.on_initialized(context).await;
    }

    async fn on_roots_list_changed(&self, context: NotificationContext<RoleServer>) {
        self.notified("notifications/roots/list_changed", &context);
        self.inner.on_roots_list_changed(context).await;
    }

    async fn on_custom_notification(
        &self,
        notification: CustomNotification,
        context: NotificationContext<RoleServer>,
    ) {
        self.notified("(unknown notification)", &context);
        self.inner
            .on_custom_notification(notification, context)
            .await;
    }

    fn get_info(&self) -> ServerConfig {
        self.inner.get_info()
    }
}
