//! Node's `exec`: a command line, split like a shell splits it but never run
//! through a shell, and pipelines of guests.
//!
//! `a.wasm x 'y z' | b.wasm | c.wasm` runs three guests, each in its own
//! runner, with each stage's stdout connected straight to the next stage's
//! stdin by a kernel pipe (the host copies nothing). Only an unquoted `|`
//! separates stages; `'|'`, `"|"` and `\|` are arguments. Words are split
//! with POSIX shell quoting rules (`shell-words`); nothing is expanded.

use std::future::Future;
use std::pin::Pin;

use crate::child::{Child, read_output};
use crate::command::Command;
use crate::host::SpawnError;
use crate::os::Stdio;
use crate::os::pipe::cloexec_pipe;
use crate::status::ExitStatus;

/// Why a line could not be run.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("cannot parse `{line}`: {reason}")]
    Syntax { line: String, reason: String },
    #[error("stage {stage} of `{line}` is empty")]
    EmptyStage { line: String, stage: usize },
    #[error("stage {stage} (`{module}`): {source}")]
    Spawn {
        stage: usize,
        module: String,
        #[source]
        source: SpawnError,
    },
    #[error("cannot connect stage {stage} to the next: {source}")]
    Pipe {
        stage: usize,
        #[source]
        source: std::io::Error,
    },
}

/// What a pipeline's run collected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// The last stage's status: the pipeline's.
    pub status: ExitStatus,
    /// Every stage's status, in order.
    pub stages: Vec<ExitStatus>,
    /// The last stage's stdout.
    pub stdout: Vec<u8>,
    /// Every stage's stderr, one after the other in stage order.
    pub stderr: Vec<u8>,
}

/// Split `line` at every `|` outside quotes and escapes.
fn split_stages(line: &str) -> Vec<&str> {
    let mut stages = Vec::new();
    let (mut single, mut double, mut escaped) = (false, false, false);
    let mut start = 0;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if !single => escaped = true,
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '|' if !single && !double => {
                stages.push(&line[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    stages.push(&line[start..]);
    stages
}

/// Parse a line into the words of each stage.
///
/// # Errors
///
/// [`ExecError::Syntax`] for unbalanced quotes, [`ExecError::EmptyStage`]
/// for `a.wasm | | b.wasm` and the like.
pub fn parse(line: &str) -> Result<Vec<Vec<String>>, ExecError> {
    split_stages(line)
        .into_iter()
        .enumerate()
        .map(|(i, stage)| {
            let words = shell_words::split(stage).map_err(|err| ExecError::Syntax {
                line: line.to_owned(),
                reason: err.to_string(),
            })?;
            if words.is_empty() {
                return Err(ExecError::EmptyStage {
                    line: line.to_owned(),
                    stage: i + 1,
                });
            }
            Ok(words)
        })
        .collect()
}

/// A line of one or more guests, stdout to stdin.
#[derive(Debug)]
pub struct Pipeline {
    stages: Vec<Command>,
}

impl Pipeline {
    /// The pipeline for `line`: each stage's first word is the module.
    ///
    /// # Errors
    ///
    /// [`ExecError::Syntax`] for unbalanced quotes, [`ExecError::EmptyStage`]
    /// for `a.wasm | | b.wasm` and the like.
    pub fn parse(line: &str) -> Result<Pipeline, ExecError> {
        let stages = parse(line)?
            .into_iter()
            .map(|words| {
                let mut command = Command::new(&words[0]);
                command.arg0(&words[0]).args(words[1..].iter().cloned());
                command
            })
            .collect();
        Ok(Pipeline { stages })
    }

    /// The stages, to set options on each (env, folders, timeout, ...).
    pub fn stages_mut(&mut self) -> &mut [Command] {
        &mut self.stages
    }

    /// Start every stage. The first stage reads `stdin`, the last writes
    /// `stdout`, every stage writes its stderr to a fresh `stderr()`.
    ///
    /// # Errors
    ///
    /// When a stage cannot start; the stages already started are killed.
    pub async fn spawn(
        &mut self,
        stdin: Stdio,
        stdout: Stdio,
        mut stderr: impl FnMut() -> Stdio,
    ) -> Result<Vec<Child>, ExecError> {
        let last = self.stages.len() - 1;
        let mut children: Vec<Child> = Vec::with_capacity(self.stages.len());
        let mut next_stdin = Some(stdin);
        let mut last_stdout = Some(stdout);
        for (i, command) in self.stages.iter_mut().enumerate() {
            command.stdin(next_stdin.take().unwrap_or(Stdio::Null));
            if i == last {
                command.stdout(last_stdout.take().unwrap_or(Stdio::Inherit));
            } else {
                let (read, write) = cloexec_pipe().map_err(|source| ExecError::Pipe {
                    stage: i + 1,
                    source,
                })?;
                command.stdout(Stdio::Fd(write));
                next_stdin = Some(Stdio::Fd(read));
            }
            command.stderr(stderr());
            match command.spawn().await {
                Ok(child) => children.push(child),
                Err(source) => {
                    for child in &children {
                        child.kill();
                    }
                    return Err(ExecError::Spawn {
                        stage: i + 1,
                        module: command.get_module().display().to_string(),
                        source,
                    });
                }
            }
            // `command` still holds nothing of the pipe: its stdio was taken
            // at spawn, so this process keeps no end open and EOF propagates.
        }
        Ok(children)
    }

    /// Run with the terminal's stdio; every stage's status, in order.
    ///
    /// # Errors
    ///
    /// When a stage cannot start.
    pub async fn status(&mut self) -> Result<Vec<ExitStatus>, ExecError> {
        let children = self
            .spawn(Stdio::Inherit, Stdio::Inherit, || Stdio::Inherit)
            .await?;
        let mut statuses = Vec::with_capacity(children.len());
        for child in &children {
            statuses.push(child.wait().await);
        }
        Ok(statuses)
    }

    /// Run to the end and collect the last stage's stdout and every stage's
    /// stderr (Node's `exec`). Stdin is null.
    ///
    /// # Errors
    ///
    /// When a stage cannot start.
    pub async fn output(&mut self) -> Result<ExecOutput, ExecError> {
        let max = self.stages.last().and_then(Command::output_limit);
        let mut children = self
            .spawn(Stdio::Null, Stdio::Piped, || Stdio::Piped)
            .await?;
        let stdout = children.last_mut().and_then(|c| c.stdout.take());
        let stderrs: Vec<_> = children.iter_mut().map(|c| c.stderr.take()).collect();
        let reads: Vec<Pin<Box<dyn Future<Output = Vec<u8>> + Send>>> = stderrs
            .into_iter()
            .map(|s| {
                Box::pin(read_output(s, u64::MAX, None))
                    as Pin<Box<dyn Future<Output = Vec<u8>> + Send>>
            })
            .collect();
        // Past the output limit, the last stage is stopped.
        let last = children.last();
        let collect = async {
            match last {
                Some(child) => child.collect(stdout, max.unwrap_or(u64::MAX)).await,
                None => Vec::new(),
            }
        };
        let (stdout, stderrs) = tokio::join!(collect, futures_util::future::join_all(reads));
        let mut stages = Vec::with_capacity(children.len());
        for child in &children {
            stages.push(child.wait().await);
        }
        Ok(ExecOutput {
            status: stages
                .last()
                .cloned()
                .unwrap_or(ExitStatus::Exited { code: 0 }),
            stages,
            stdout,
            stderr: stderrs.concat(),
        })
    }
}

/// Run `line` and collect its output (Node's `exec`), never through a shell.
///
/// # Errors
///
/// When the line does not parse or a stage cannot start.
pub async fn exec(line: &str) -> Result<ExecOutput, ExecError> {
    Pipeline::parse(line)?.output().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<Vec<String>> {
        parse(line).unwrap()
    }

    #[test]
    fn only_unquoted_bars_split_stages() {
        assert_eq!(
            words(r#"a.wasm '|' "|" \| x|b.wasm y | c.wasm"#),
            vec![
                vec!["a.wasm", "|", "|", "|", "x"],
                vec!["b.wasm", "y"],
                vec!["c.wasm"]
            ]
        );
    }

    #[test]
    fn quoting_follows_the_shell() {
        assert_eq!(
            words(r#"t.wasm --name 'a b' "c \"d\"" e\ f 'it'"'"'s'"#),
            vec![vec!["t.wasm", "--name", "a b", "c \"d\"", "e f", "it's"]]
        );
    }

    #[test]
    fn bad_lines_are_refused_with_the_reason() {
        assert_eq!(
            parse("a.wasm | | b.wasm").unwrap_err().to_string(),
            "stage 2 of `a.wasm | | b.wasm` is empty"
        );
        assert_eq!(
            parse("a.wasm 'open").unwrap_err().to_string(),
            "cannot parse `a.wasm 'open`: missing closing quote"
        );
    }
}
