//! Chat templates (Jinja, from GGUF `tokenizer.chat_template`) rendered with minijinja.

use minijinja::syntax::SyntaxConfig;
use minijinja::{Environment, ErrorKind, Value, context};
use serde::Serialize;

use crate::Error;

const TEMPLATE_NAME: &str = "chat";

/// A compiled chat template. Rendering is `&self` and thread-safe.
pub(crate) struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

#[derive(Serialize)]
struct Message<'a> {
    role: &'a str,
    content: &'a str,
}

impl ChatTemplate {
    /// Compiles `source` with the settings Hugging Face uses for chat templates
    /// (`trim_blocks`, `lstrip_blocks`, Python string methods, `raise_exception`).
    pub fn new(source: String, bos_token: String, eos_token: String) -> Result<Self, Error> {
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .build()
            .map_err(|e| Error::Template(e.to_string()))?;
        env.set_syntax(syntax);
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> Result<Value, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_template_owned(TEMPLATE_NAME, source)
            .map_err(|e| Error::Template(format!("compiling: {e}")))?;
        Ok(ChatTemplate {
            env,
            bos_token,
            eos_token,
        })
    }

    /// Renders `messages` with `add_generation_prompt = true`.
    pub fn render(&self, messages: &[crate::ChatMessage]) -> Result<String, Error> {
        self.render_with(messages, true)
    }

    /// Renders `messages`, with or without the assistant's turn opened at the end.
    pub fn render_with(
        &self,
        messages: &[crate::ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, Error> {
        let messages: Vec<Message<'_>> = messages
            .iter()
            .map(|m| Message {
                role: &m.role,
                content: &m.content,
            })
            .collect();
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(|e| Error::Template(e.to_string()))?;
        template
            .render(context! {
                messages => Value::from(minijinja::value::Serde(&messages)),
                add_generation_prompt => add_generation_prompt,
                bos_token => &self.bos_token,
                eos_token => &self.eos_token,
            })
            .map_err(|e| Error::Template(format!("rendering: {e}")))
    }
}
