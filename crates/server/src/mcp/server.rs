//! The MCP server handler: server info, the tools (`tools.rs`), one prompt and one resource.

use std::sync::Arc;

use rmcp::handler::server::router::prompt::PromptRouter;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::{
    Implementation, ListResourcesResult, PaginatedRequestParams, PromptMessage,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
    ResourceContents, Role, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler, prompt, prompt_handler, prompt_router,
    tool_handler,
};
use schemars::JsonSchema;
use serde::Deserialize;

/// The one resource: a short description of this server.
pub const ABOUT_URI: &str = "mcp-oauth://server/about";

/// The handler as served: every message recorded for analytics.
pub type Served = crate::analytics::mcp::Recorded<McpServer>;

/// One handler per MCP session (or per stateless request); the routers are built once and
/// shared, so creating one is cheap.
#[derive(Clone)]
pub struct McpServer {
    tool_router: Arc<ToolRouter<McpServer>>,
    prompt_router: Arc<PromptRouter<McpServer>>,
    issuer: Arc<str>,
}

impl McpServer {
    pub fn new(issuer: &str) -> Self {
        Self {
            tool_router: Arc::new(Self::tool_router()),
            prompt_router: Arc::new(Self::prompt_router()),
            issuer: issuer.into(),
        }
    }

    /// The names of the tools this server serves.
    pub fn tool_names() -> Vec<String> {
        Self::tool_router()
            .list_all()
            .into_iter()
            .map(|t| t.name.into_owned())
            .collect()
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
pub struct MathArgs {
    /// The question to work through.
    pub question: String,
}

#[prompt_router]
impl McpServer {
    /// Work through a math question step by step with this server's tools.
    #[prompt(name = "solve_math", title = "Solve a math question")]
    async fn solve_math(
        &self,
        Parameters(MathArgs { question }): Parameters<MathArgs>,
    ) -> Result<Vec<PromptMessage>, McpError> {
        Ok(vec![PromptMessage::new_text(
            Role::User,
            format!(
                "Solve this step by step, using the add_numbers, calculate_circle_area and \
                 check_prime_number tools where they help:\n\n{question}"
            ),
        )])
    }
}

#[tool_handler(router = self.tool_router)]
#[prompt_handler(router = self.prompt_router)]
impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_prompts()
                .enable_resources()
                .build(),
        )
        .with_server_info(
            Implementation::new("mcp-oauth", env!("CARGO_PKG_VERSION"))
                .with_title("mcp-oauth demo MCP server"),
        )
        .with_instructions(
            "Demo tools (add_numbers, calculate_circle_area, generate_random_number, format_text, \
                 check_prime_number) and whoami, which shows who the access token belongs to.",
        )
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        Ok(ListResourcesResult::with_all_items(vec![
            Resource::new(ABOUT_URI, "about")
                .with_title("About this server")
                .with_mime_type("text/plain"),
        ]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        if request.uri != ABOUT_URI {
            return Err(McpError::resource_not_found(
                "resource not found",
                Some(serde_json::json!({"uri": request.uri})),
            ));
        }
        let text = format!(
            "mcp-oauth {} — an MCP server protected by the OAuth 2.1 authorization server at {}.",
            env!("CARGO_PKG_VERSION"),
            self.issuer
        );
        Ok(ReadResourceResult::new(vec![ResourceContents::text(text, request.uri.clone())]).into())
    }
}
